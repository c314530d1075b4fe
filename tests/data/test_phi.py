"""No patient identifier from a DICOM header reaches the manifest, quarantine, cache or logs."""

import logging

from tests.data.conftest import PHI, random_image, write_dicom
from umsrep.data.cache import load_cache, prepare_cache
from umsrep.data.importers import run_import


def test_identifying_dicom_tags_never_leave_the_importer(tmp_path, caplog):
    images = tmp_path / "rsna" / "stage_2_train_images"
    write_dicom(images / "anon-1.dcm", random_image(32), tags=PHI)
    write_dicom(images / "anon-2.dcm", random_image(32, seed=1), tags=PHI, with_pixels=False)
    (tmp_path / "rsna" / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\nanon-1,,,,,0\nanon-2,,,,,0\n"
    )
    with caplog.at_level(logging.DEBUG):
        report = run_import("rsna", tmp_path / "rsna", tmp_path / "out" / "m.parquet")
        cache = prepare_cache(report.manifest_path, size=32, out=tmp_path / "out" / "cache",
                              workers=1)
    assert len(report.manifest) == 1 and len(report.quarantine) == 1
    assert load_cache(cache).index["view_position"].tolist() == ["PA"]
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "images.npy" for p in written)
    texts = [p.read_bytes() for p in written] + [caplog.text.encode()]
    texts.append(report.manifest.to_csv().encode())
    for value in PHI.values():
        for part in value.split("^"):
            assert not any(part.encode() in blob for blob in texts), part
