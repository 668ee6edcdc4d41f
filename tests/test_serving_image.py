"""ServingImage: the pinned image in Artifact Registry of the stack's region, exposed by digest, never Docker Hub."""

from __future__ import annotations

import re
from typing import Any

import pytest

from components.mocks import PLACEHOLDER_DIGEST, RecordingMocks, resolve
from components.serving_image import (
    CustomBuild,
    ServingImage,
    ServingImageError,
    UpstreamImage,
    parse_image,
)
from tests.conftest import make_config
from tests.gce_harness import AR_IMAGE_BY_DIGEST, answer_registry_lookups, build, of_type, one

REPOSITORY = "gcp:artifactregistry/repository:Repository"


@pytest.fixture
def registry_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return answer_registry_lookups(monkeypatch)


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("vllm/vllm-openai:v0.33.0", UpstreamImage("docker.io", "vllm/vllm-openai", "v0.33.0", None)),
        ("nginx:1.27", UpstreamImage("docker.io", "library/nginx", "1.27", None)),
        ("docker.io/vllm/vllm-openai:v1", UpstreamImage("docker.io", "vllm/vllm-openai", "v1", None)),
        ("index.docker.io/vllm/vllm-openai:v1", UpstreamImage("docker.io", "vllm/vllm-openai", "v1", None)),
        (
            f"vllm/vllm-openai:v0.33.0@{DIGEST}",
            UpstreamImage("docker.io", "vllm/vllm-openai", "v0.33.0", DIGEST),
        ),
        (f"vllm/vllm-openai@{DIGEST}", UpstreamImage("docker.io", "vllm/vllm-openai", None, DIGEST)),
        ("ghcr.io/org/team/img:2.0", UpstreamImage("ghcr.io", "org/team/img", "2.0", None)),
        ("localhost:5000/img:dev", UpstreamImage("localhost:5000", "img", "dev", None)),
    ],
)
def test_parse_image(reference: str, expected: UpstreamImage) -> None:
    assert parse_image(reference) == expected


@pytest.mark.parametrize(
    ("reference", "fix"),
    [
        ("vllm/vllm-openai", "pin it"),
        ("VLLM/Openai:v1", "REGISTRY/NAME:TAG"),
        ("vllm/vllm-openai:v1@sha256:abc", "64 lower-case hex"),
    ],
)
def test_bad_reference_names_value_and_fix(reference: str, fix: str) -> None:
    with pytest.raises(ServingImageError, match=r"model\.image") as error:
        parse_image(reference)
    assert reference in str(error.value) and fix in str(error.value)


def _image(mocks: RecordingMocks, **kwargs: Any) -> tuple[ServingImage, str]:
    config = kwargs.pop("config", None) or make_config()
    image = build(lambda: ServingImage("llm", config, **kwargs))
    return image, resolve(image.image_ref)


def test_default_is_a_remote_repository_in_the_stack_region(
    mocks: RecordingMocks, registry_lookups: list[str]
) -> None:
    config = make_config(region="europe-west4", gce={"zones": ["europe-west4-a"]})
    _, ref = _image(mocks, config=config)
    repo = one(mocks, REPOSITORY)
    assert repo["mode"] == "REMOTE_REPOSITORY"
    assert repo["format"] == "DOCKER"
    assert repo["location"] == "europe-west4" and repo["project"] == "test-project"
    assert repo["remoteRepositoryConfig"]["dockerRepository"] == {"publicRepository": "DOCKER_HUB"}
    # The digest is resolved from the upstream tag by the registry API (no daemon), then served from AR.
    assert registry_lookups == ["vllm/vllm-openai:v0.33.0"]
    assert ref == f"europe-west4-docker.pkg.dev/test-project/llm-remote/vllm/vllm-openai@{PLACEHOLDER_DIGEST}"
    assert AR_IMAGE_BY_DIGEST.fullmatch(ref)
    assert not of_type(
        mocks, "docker:index/remoteImage:RemoteImage"
    )  # nothing is pulled where `pulumi up` runs


def test_digest_pinned_in_config_is_used_without_a_lookup(
    mocks: RecordingMocks, registry_lookups: list[str]
) -> None:
    config = make_config(model={"id": "google/gemma-4-E4B-it", "image": f"vllm/vllm-openai:v0.33.0@{DIGEST}"})
    _, ref = _image(mocks, config=config)
    assert registry_lookups == []
    assert ref == f"us-central1-docker.pkg.dev/test-project/llm-remote/vllm/vllm-openai@{DIGEST}"


def test_other_upstream_registries_become_custom_upstreams(
    mocks: RecordingMocks, registry_lookups: list[str]
) -> None:
    config = make_config(model={"id": "google/gemma-4-E4B-it", "image": "ghcr.io/acme/vllm:v1"})
    _, ref = _image(mocks, config=config)
    docker_repo = one(mocks, REPOSITORY)["remoteRepositoryConfig"]["dockerRepository"]
    assert docker_repo == {"customRepository": {"uri": "https://ghcr.io"}}
    assert registry_lookups == ["ghcr.io/acme/vllm:v1"]
    assert ref.startswith("us-central1-docker.pkg.dev/test-project/llm-remote/acme/vllm@sha256:")


def test_unresolvable_tag_fails_with_the_fix(mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RecordingMocks, "call", lambda self, args: {"name": args.args["name"]})
    with pytest.raises(
        Exception, match=re.escape("could not resolve 'vllm/vllm-openai:v0.33.0' to a sha256 digest")
    ):
        _image(mocks)


def test_mirror_mode_pushes_to_a_standard_repository(mocks: RecordingMocks) -> None:
    _, ref = _image(mocks, mode="mirror")
    repo = one(mocks, REPOSITORY)
    assert "mode" not in repo and repo["location"] == "us-central1"
    assert repo["dockerConfig"] == {"immutableTags": True}
    pulled = one(mocks, "docker:index/remoteImage:RemoteImage")
    assert pulled["name"] == "vllm/vllm-openai:v0.33.0" and pulled["platform"] == "linux/amd64"
    tag = one(mocks, "docker:index/tag:Tag")
    assert tag["targetImage"] == "us-central1-docker.pkg.dev/test-project/llm-mirror/vllm/vllm-openai:v0.33.0"
    pushed = one(mocks, "docker:index/registryImage:RegistryImage")
    assert pushed["name"] == tag["targetImage"] and pushed["keepRemotely"] is True
    assert ref == f"us-central1-docker.pkg.dev/test-project/llm-mirror/vllm/vllm-openai@{PLACEHOLDER_DIGEST}"


def test_custom_dockerfile_is_built_from_the_pinned_image_and_pushed(mocks: RecordingMocks) -> None:
    _, ref = _image(mocks, build=CustomBuild(context="./image", dockerfile="./image/Dockerfile", tag="v2"))
    repo = one(mocks, REPOSITORY)
    assert repo["location"] == "us-central1" and "mode" not in repo
    image = one(mocks, "docker:index/image:Image")
    assert image["imageName"] == "us-central1-docker.pkg.dev/test-project/llm-build/vllm-custom:v2"
    assert image["build"]["platform"] == "linux/amd64"
    assert image["build"]["args"]["VLLM_BASE_IMAGE"] == "vllm/vllm-openai:v0.33.0"
    assert ref == f"us-central1-docker.pkg.dev/test-project/llm-build/vllm-custom@{PLACEHOLDER_DIGEST}"
    assert AR_IMAGE_BY_DIGEST.fullmatch(ref)


def test_image_already_in_artifact_registry_needs_a_digest(mocks: RecordingMocks) -> None:
    pinned = f"us-central1-docker.pkg.dev/other-proj/images/vllm@{DIGEST}"
    config = make_config(model={"id": "google/gemma-4-E4B-it", "image": pinned})
    _, ref = _image(mocks, config=config)
    assert ref == pinned and not of_type(mocks, REPOSITORY)
    tag_only = make_config(
        model={"id": "google/gemma-4-E4B-it", "image": "us-central1-docker.pkg.dev/p/r/vllm:v1"}
    )
    with pytest.raises(ServingImageError, match=r"pinned by tag only; append @sha256"):
        build(lambda: ServingImage("llm2", tag_only))


def test_children_are_parented_and_named_from_the_component(
    mocks: RecordingMocks, registry_lookups: list[str]
) -> None:
    _image(mocks)
    (component,) = of_type(mocks, "vllm-gcp:image:ServingImage")
    children = [r for r in mocks.resources if r.parent == component.urn]
    assert [r.name for r in children] == ["llm-remote"]


@pytest.mark.parametrize("bad", ["LLM", "llm_1", "-llm", "x" * 31])
def test_bad_component_name(mocks: RecordingMocks, bad: str) -> None:
    with pytest.raises(ValueError, match=f"ServingImage name {bad!r} is not usable"):
        build(lambda: ServingImage(bad, make_config()))


def test_bad_mode(mocks: RecordingMocks) -> None:
    with pytest.raises(ServingImageError, match="mode 'pull' is not valid; use 'remote' or 'mirror'"):
        build(lambda: ServingImage("llm", make_config(), mode="pull"))  # type: ignore[arg-type]


def test_bad_image_makes_the_plan_exit_2_with_the_message(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from components.plan import main

    stack = tmp_path / "Pulumi.badimage.yaml"
    stack.write_text(
        "config:\n  gcp:project: my-project\n  gcp:region: us-central1\n  vllm-gcp:platform: gce\n"
        "  vllm-gcp:model:\n    id: google/gemma-4-E4B-it\n    image: VLLM/Openai:v1\n"
        "  vllm-gcp:gce:\n    zones: [us-central1-a]\n"
    )
    assert main([str(stack)]) == 2
    err = capsys.readouterr().err
    assert "model.image: 'VLLM/Openai:v1' is not a valid image reference" in err and "Traceback" not in err
