"""manage.py train / evaluate: the same services, synchronous, in this process."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from embeddings.models import ModelVersion
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

TINY_SETS = ["loop.epochs=2", "loop.batch_size=4", "loop.warmup_steps=0", "model.family=joint", "model.dim=16",
             "model.hidden=32"]


def run_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_train_command_records_a_run_and_a_candidate(tiny_collection, fake_encoders, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"model": {"head": "linear"}}))
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    out, err = run_command("train", "--kind", "embedding", "--collection", "tiny", "--config", str(config), *sets,
                           "--json")
    result = json.loads(out)
    run = TrainingRun.objects.get(pk=result["run"])
    assert run.status == "succeeded" and run.config["model"]["head"] == "linear" and run.config["loop"]["epochs"] == 2
    assert result["dev"]["rsum"] == run.model_version.metrics["dev"]["rsum"]
    assert "epoch 2:" in err  # progress lines
    # No ood-dev collection on this install: the run says so and is scored on dev alone.
    assert "out-of-domain collection 'ood-dev' not found" in run.log_tail
    assert result["dev"]["both_rsum"] == result["dev"]["rsum"] and "ood_t2i_r1" not in result["dev"]


def test_train_command_rejects_unknown_settings_and_collections(tiny_collection, fake_encoders):
    with pytest.raises(CommandError, match="unknown key"):
        run_command("train", "--kind", "embedding", "--collection", "tiny", "--set", "loop.nope=1", "--no-progress")
    with pytest.raises(CommandError, match="No such collection"):
        run_command("train", "--kind", "embedding", "--collection", "missing", "--no-progress")
    assert not TrainingRun.objects.exists()


def test_evaluate_reports_recall_for_the_active_embedding_and_captions_for_the_captioner(tiny_collection,
                                                                                        fake_encoders):
    sets = [a for s in ["loop.epochs=1", "loop.batch_size=8", "task.vocab_min_count=1", "model.decoder=show_tell",
                        "model.hidden_dim=16", "model.embed_dim=16", "model.context_dim=16"] for a in ("--set", s)]
    run_command("train", "--kind", "captioner", "--collection", "tiny", *sets, "--no-progress")
    ModelVersion.objects.filter(kind="captioner").update(status="active")
    out, _ = run_command("evaluate", "--collection", "tiny", "--split", "dev", "--quick", "--json")
    result = json.loads(out)
    assert result["images"] == 4 and result["captions"] == 8
    emb = result["embedding"]["metrics"]
    assert set(emb) >= {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"}
    assert 0 <= emb["t2i_r1"] <= emb["t2i_r5"] <= emb["t2i_r10"] == 100.0  # only 4 images: R@10 is certain
    assert "cider_d" in result["captioner"]["metrics"] and result["captioner"]["name"].startswith("captioner-run")
    with pytest.raises(CommandError, match="No test images"):
        run_command("evaluate", "--collection", "tiny", "--split", "test")


def test_train_defaults_to_the_prior_family_scored_on_both_sets_and_evaluate_reports_both(tiny_collection,
                                                                                          fake_encoders):
    """Issue 20: the default embedding is the ConSE-prior family, early-stopped on dev + the
    out-of-domain collection; evaluate prints both sets with their sizes and --record keeps them."""
    from tests.factories import CollectionFactory, UserFactory
    from tests.training.conftest import make_captioned
    from training.services.evaluation import evaluation_set

    ood = CollectionFactory(owner=UserFactory(), name="ood-dev")
    make_captioned(ood, n_train=0, n_dev=3, seed0=100)
    sets = [a for s in ["loop.epochs=2", "loop.batch_size=4", "loop.warmup_steps=0", "model.hidden=32",
                        "model.joint_dim=16", "model.dim=400", "model.gate_centroids=2"] for a in ("--set", s)]
    out, err = run_command("train", "--kind", "embedding", "--collection", "tiny", *sets, "--json")
    result = json.loads(out)
    version = ModelVersion.objects.get(pk=result["model_version"])
    assert version.config["model"]["family"] == version.family == "prior" and version.dim == 400
    assert {"ood_t2i_r1", "both_rsum"} <= set(result["dev"]) and version.metrics["data"]["ood_images"] == 3
    assert evaluation_set(version, "ood")["images"] == 3 and evaluation_set(version, "in_domain")["images"] == 4
    assert "ood_t2i_r1" in result["compared_with"]["dev"]  # the active ConSE v0, on the same OOD set
    out, _ = run_command("evaluate", "--collection", "tiny", "--kind", "embedding", "--model-version",
                         str(version.pk), "--record")
    assert "out-of-domain dev (ood-dev): 3 images, 6 captions" in out and "out-of-domain: i2t_r1" in out
    version.refresh_from_db()
    assert version.metrics["sets"]["ood"]["images"] == 3 and "t2i_r1" in version.metrics["sets"]["ood"]["metrics"]


def test_ship_model_command_stores_decoding_and_measures_the_copy(tiny_collection, fake_encoders, tmp_path,
                                                                   settings):
    from embeddings.ml.caption_generator import load_captioner

    settings.SHIPPED_MODEL_DIR = tmp_path / "models"
    from tests.training.conftest import TINY_CAPTIONER
    from training import services

    run = services.training_run_start(kind="captioner", collections=[tiny_collection], user=None, enqueue=False,
                                      config_overrides={**TINY_CAPTIONER, "loop": {**TINY_CAPTIONER["loop"],
                                                                                   "epochs": 1}})
    version = services.training_run_execute(run.pk).model_version
    out = io.StringIO()
    call_command("ship_model", "--model-version", str(version.pk), "--name", "cap", "--decoding",
                 '{"beam_size": 2}', "--measure", "tiny", "--source", "manage.py train ...", stdout=out)
    assert "dev: bleu_1" in out.getvalue()
    entry = json.loads((tmp_path / "models" / "shipped.json").read_text())["models"][0]
    assert entry["metrics"]["source"] == "manage.py train ..." and "bleu_4" in entry["metrics"]["dev"]
    assert load_captioner(tmp_path / "models" / "cap").decoding.beam_size == 2
    for bad, message in ((["--decoding", "{nope"], "not JSON"), (["--decoding", "[1]"], "JSON object"),
                         (["--measure", "missing"], "Unknown collection"), (["--decoding", '{"beam": 2}'], "Bad")):
        with pytest.raises(CommandError, match=message):
            call_command("ship_model", "--model-version", str(version.pk), "--name", "cap2", *bad)
    assert not (tmp_path / "models" / "cap2").exists()
