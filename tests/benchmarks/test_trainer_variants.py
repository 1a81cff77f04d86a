import pytest

from benchmarks import trainer_variants


@pytest.mark.parametrize("only", ["fused batch norm", "keras batch norm;no such variant"])
def test_only_names_known_variants_and_the_base_and_measures_nothing_otherwise(capsys, only, monkeypatch):
    monkeypatch.setattr(trainer_variants, "measure", lambda *a, **k: pytest.fail("measured"))
    with pytest.raises(SystemExit) as exit:
        trainer_variants.main(["--only", only])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "--only" in err and repr(only) in err and "'keras batch norm'" in err


def test_write_result_writes_both_files_into_a_new_folder(tmp_path, capsys):
    import json

    from benchmarks.record import write_result

    folder = tmp_path / "isa" / "amd"
    write_result("trainer_variants", {"images": 3}, lambda r: f"{r['images']} images\n", folder=folder)
    assert json.loads((folder / "trainer_variants.json").read_text()) == {"images": 3}
    assert (folder / "trainer_variants.md").read_text() == "3 images\n"
    assert "3 images" in capsys.readouterr().out
