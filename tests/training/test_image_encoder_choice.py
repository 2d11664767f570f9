"""`task.image_encoder`: a run trains on the features of the encoder it names, the version records
that encoder's identity, and scoring an existing version feeds it its own encoder's features."""
from __future__ import annotations

import pytest

from embeddings import runtime
from embeddings.models import ModelVersion
from project.exceptions import ApplicationError
from tests.training.conftest import TINY_CAPTIONER, TINY_EMBEDDING
from training import services
from training.encoders import encoders_for_version, get_encoders
from training.ml.config import TrainConfig, apply_overrides, image_encoder_of

pytestmark = pytest.mark.django_db(transaction=True)


def test_config_names_the_encoder_and_refuses_an_unknown_one():
    for kind in ("embedding", "captioner"):
        config = TrainConfig.default(kind)
        assert image_encoder_of(config) == "efficientnet-lite0"
        chosen = apply_overrides(config, ["task.image_encoder=efficientnet-lite2"])
        assert image_encoder_of(chosen) == "efficientnet-lite2"
        assert TrainConfig.from_dict(chosen.to_dict()) == chosen
        with pytest.raises(ValueError, match="image_encoder"):
            apply_overrides(config, ["task.image_encoder=resnet50"])
    assert image_encoder_of(TrainConfig.default("paragraph")) == "efficientnet-lite0"  # no option: Lite0


@pytest.mark.parametrize("kind, config", [("embedding", TINY_EMBEDDING), ("captioner", TINY_CAPTIONER)])
def test_a_lite2_run_records_lite2_and_is_served_lite2_features(tiny_collection, fake_encoders, kind, config):
    run = services.training_run_start(kind=kind, collections=[tiny_collection], config_overrides=config,
                                      config_sets=["task.image_encoder=efficientnet-lite2"], user=None,
                                      enqueue=False)
    run = services.training_run_execute(run.pk)
    assert run.status == "succeeded", run.log_tail[-2000:]
    version = run.model_version
    assert version.encoders["image"].startswith("efficientnet-lite2|")
    assert runtime.image_encoder_name(version) == "efficientnet-lite2"
    assert encoders_for_version(version).image_encoder == "efficientnet-lite2"
    # the active ConSE v0 (no identity recorded) keeps Lite0 when it is scored as the baseline
    active = ModelVersion.objects.get(kind="embedding", status="active")
    assert encoders_for_version(active).image_encoder == "efficientnet-lite0"


def test_an_unknown_encoder_in_a_run_request_is_a_400(tiny_collection, fake_encoders):
    with pytest.raises(ApplicationError, match="image_encoder") as err:
        services.training_run_start(kind="embedding", collections=[tiny_collection], config_overrides=TINY_EMBEDDING,
                                    config_sets=["task.image_encoder=resnet50"], user=None, enqueue=False)
    assert err.value.status_code == 400
    assert get_encoders().image_encoder == "efficientnet-lite0"
