"""`ServingImage`: the pinned vLLM image in an Artifact Registry repository of the stack's region, by digest.

Both platforms consume `image_ref`, `<region>-docker.pkg.dev/<project>/<repo>/<path>@sha256:<digest>`: an
immutable reference, so every VM of a rollout (and every Vertex replica) runs exactly the same bytes, and no VM
ever talks to Docker Hub.

Decision: by default an Artifact Registry *remote* repository (a pull-through cache of Docker Hub), referenced by
the upstream digest. A *mirror* (standard repository + pull/tag/push with pulumi-docker) is available as
`mode="mirror"`, and a custom Dockerfile is built and pushed to a standard repository (`build=CustomBuild(...)`).

Why the remote repository is the default:
- It needs no Docker daemon where `pulumi up` runs. A mirror has pulumi-docker pull the ~10 GB (compressed) vLLM
  image onto the deployer's machine and push it again; `docker.RemoteImage` needs a daemon, and a hosted CI runner
  (a GitHub-hosted Ubuntu runner has ~14 GB of free disk) cannot even hold the extracted image. The digest comes
  from the registry API (`docker.get_registry_image`, a manifest lookup), which needs no daemon.
- VMs still never contact Docker Hub: they pull from `<region>-docker.pkg.dev` through Private Google Access.
  Artifact Registry fetches each layer from Docker Hub once, on the first pull, and serves the cached copy after
  that ("The first time that you request a version of a package, Artifact Registry downloads and caches the package
  in the remote repository. The next time ... Artifact Registry serves the cached copy":
  https://cloud.google.com/artifact-registry/docs/repositories/remote-overview). Cached copies also survive a
  Docker Hub outage (same page, "Use cases and benefits").
- Docker Hub limits unauthenticated pulls per IPv4 address (10 per hour since 2025; earlier 100 per 6 hours:
  docker/docs PRs #21494 and #22134, content/manuals/docker-hub/usage). Every VM behind one Cloud NAT shares that
  address, so a scale-out of a few replicas pulling straight from Docker Hub would hit the limit; with the remote
  repository only Artifact Registry's own cache fill counts. Remote repositories can also authenticate upstream
  (https://cloud.google.com/artifact-registry/docs/repositories/remote-overview, "Upstream authentication").
- The digest pin makes the reference immutable even though the upstream tag is mutable; the cache is keyed by
  content, so the digest we resolve from Docker Hub is the digest Artifact Registry serves.

Vertex AI: its model-upload docs require "the Artifact Registry URI" of the serving image, i.e. a
`REGION-docker.pkg.dev/...` reference pullable by the Vertex AI service agent
(https://cloud.google.com/vertex-ai/docs/predictions/use-custom-container, `imageUri`; the AI Platform
`ContainerSpec.image` reference adds that the URI "must begin with the hostname {REGION}-docker.pkg.dev" and that
the service agent can read same-project repositories by default). A remote repository serves exactly such URIs.
Google documents remote repositories explicitly for Cloud Run ("You can use container images from other public or
private registries ... by setting up an Artifact Registry remote repository":
https://cloud.google.com/run/docs/deploying), but we found no Vertex page that names remote repositories either
way. So this is the one link we could not verify offline: if a Vertex upload rejects the remote-repository URI, use
`mode="mirror"` for the vertex platform (docs/gce.md, "Serving image").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_docker as docker
import pulumi_gcp as gcp

from .config import ConfigError, StackConfig
from .naming import check_component_name, standard_labels

ImageMode = Literal["remote", "mirror"]
DOCKER_HUB = "docker.io"
# Docker Hub's own host names all mean the public Docker Hub registry.
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_PATH_RE = re.compile(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_AR_HOST_RE = re.compile(r"[a-z0-9-]+-docker\.pkg\.dev")
# The VMs and Vertex run on x86-64.
PLATFORM = "linux/amd64"


class ServingImageError(ConfigError):
    """A bad image reference or option: the message names the value and the fix (the plan exits 2 on it)."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


@dataclass(frozen=True)
class UpstreamImage:
    """A parsed image reference: `registry/path[:tag][@digest]`."""

    registry: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB

    @property
    def is_artifact_registry(self) -> bool:
        return bool(_AR_HOST_RE.fullmatch(self.registry))

    @property
    def lookup_name(self) -> str:
        """The name the registry API resolves to a digest (`vllm/vllm-openai:v0.33.0`, `ghcr.io/o/i:t`)."""
        host = "" if self.is_docker_hub else f"{self.registry}/"
        return f"{host}{self.path}:{self.tag}"


def parse_image(reference: str) -> UpstreamImage:
    """Split an image reference the way Docker does (Docker Hub default, `library/` for official images)."""
    name, _, digest = reference.partition("@")
    if digest and not _DIGEST_RE.fullmatch(digest):
        raise ServingImageError(
            f"model.image: {reference!r} has a malformed digest {digest!r}; use @sha256:<64 lower-case hex>"
        )
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, name
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"  # Docker Hub's official images live under library/
    if not _PATH_RE.fullmatch(path) or (tag is not None and not _TAG_RE.fullmatch(tag)):
        raise ServingImageError(
            f"model.image: {reference!r} is not a valid image reference; use REGISTRY/NAME:TAG such as "
            "vllm/vllm-openai:v0.33.0"
        )
    if tag is None and not digest:
        raise ServingImageError(
            f"model.image: {reference!r} has neither a tag nor a digest; pin it, e.g. vllm/vllm-openai:v0.33.0"
        )
    return UpstreamImage(registry=registry, path=path, tag=tag, digest=digest or None)


def remote_upstream(
    image: UpstreamImage,
) -> gcp.artifactregistry.RepositoryRemoteRepositoryConfigDockerRepositoryArgs:
    """The remote repository's upstream: the Docker Hub preset, or the image's registry as a custom upstream."""
    if image.is_docker_hub:
        return gcp.artifactregistry.RepositoryRemoteRepositoryConfigDockerRepositoryArgs(
            public_repository="DOCKER_HUB"
        )
    return gcp.artifactregistry.RepositoryRemoteRepositoryConfigDockerRepositoryArgs(
        custom_repository=gcp.artifactregistry.RepositoryRemoteRepositoryConfigDockerRepositoryCustomRepositoryArgs(
            uri=f"https://{image.registry}"
        )
    )


def require_digest(digest: str | None, image: str) -> str:
    if not digest or not _DIGEST_RE.fullmatch(digest):
        raise ServingImageError(
            f"model.image: could not resolve {image!r} to a sha256 digest (registry returned {digest!r}); check "
            "that the tag exists and is public, or pin it as IMAGE:TAG@sha256:<digest>"
        )
    return digest


@dataclass(frozen=True)
class CustomBuild:
    """A Dockerfile to build (FROM the pinned vLLM image, passed as build arg VLLM_BASE_IMAGE) and push.

    Building needs a Docker daemon where `pulumi up` runs, and `gcloud auth configure-docker
    <region>-docker.pkg.dev` there so the push can authenticate.
    """

    context: str
    dockerfile: str | None = None
    image_name: str = "vllm-custom"
    tag: str = "custom"
    args: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _PATH_RE.fullmatch(self.image_name) or not _TAG_RE.fullmatch(self.tag):
            raise ServingImageError(
                f"CustomBuild: image_name {self.image_name!r} / tag {self.tag!r} is not valid; use lower-case "
                "names such as 'vllm-custom' and tags such as 'v1'"
            )


class ServingImage(pulumi.ComponentResource):
    """The serving image in Artifact Registry (stack region), exposed as an immutable `image_ref`."""

    image_ref: pulumi.Output[str]
    repository: gcp.artifactregistry.Repository | None
    upstream: UpstreamImage

    def __init__(
        self,
        name: str,
        config: StackConfig,
        *,
        mode: ImageMode = "remote",
        build: CustomBuild | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("vllm-gcp:image:ServingImage", name, None, opts)
        check_component_name(name, "ServingImage")
        if mode not in ("remote", "mirror"):
            raise ServingImageError(
                f"ServingImage {name!r}: mode {mode!r} is not valid; use 'remote' or 'mirror'"
            )
        self.upstream = upstream = parse_image(config.model.image)
        self._base_name, self._config = name, config
        self._child_opts = pulumi.ResourceOptions(parent=self)
        self._labels = standard_labels(name, config.environment, config.model.served_name or "")
        self.repository = None
        if build is not None:
            self.image_ref = self._custom_build(build)
        elif upstream.is_artifact_registry:
            # Already in Artifact Registry: use it as is, but only by digest.
            if upstream.digest is None:
                raise ServingImageError(
                    f"model.image: {config.model.image!r} is in Artifact Registry but pinned by tag only; "
                    "append @sha256:<digest> (gcloud artifacts docker images describe IMAGE:TAG)"
                )
            self.image_ref = pulumi.Output.from_input(
                f"{upstream.registry}/{upstream.path}@{upstream.digest}"
            )
        elif mode == "remote":
            self.image_ref = self._remote_repository()
        else:
            self._require_tag_for_mirror()
            self.image_ref = self._mirror_repository()
        self.register_outputs({"image_ref": self.image_ref})

    def _new_repository(
        self, suffix: str, description: str, **extra: object
    ) -> gcp.artifactregistry.Repository:
        self.repository = gcp.artifactregistry.Repository(
            f"{self._base_name}-{suffix}",
            repository_id=f"{self._base_name}-{suffix}",
            project=self._config.project,
            location=self._config.region,
            format="DOCKER",
            description=description,
            labels=self._labels,
            opts=self._child_opts,
            **extra,
        )
        return self.repository

    def _upstream_digest(self) -> pulumi.Output[str]:
        upstream = self.upstream
        if upstream.digest:
            return pulumi.Output.from_input(upstream.digest)
        # A registry API lookup (no daemon, no pull), resolved at preview and at every update.
        found = docker.get_registry_image_output(
            name=upstream.lookup_name, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        return found.sha256_digest.apply(lambda digest: require_digest(digest, upstream.lookup_name))

    def _remote_repository(self) -> pulumi.Output[str]:
        repo = self._new_repository(
            "remote",
            f"Pull-through cache of {self.upstream.registry} for {self.upstream.path} (vllm-gcp)",
            mode="REMOTE_REPOSITORY",
            remote_repository_config=gcp.artifactregistry.RepositoryRemoteRepositoryConfigArgs(
                description=f"{self.upstream.registry} (vllm-gcp serving image)",
                docker_repository=remote_upstream(self.upstream),
            ),
        )
        return pulumi.Output.concat(repo.registry_uri, "/", self.upstream.path, "@", self._upstream_digest())

    def _require_tag_for_mirror(self) -> None:
        if self.upstream.tag is None:
            raise ServingImageError(
                f"model.image: {self._config.model.image!r} has no tag; mode='mirror' pushes under the upstream "
                "tag, so use IMAGE:TAG or IMAGE:TAG@sha256:<digest>"
            )

    def _mirror_repository(self) -> pulumi.Output[str]:
        upstream = self.upstream
        repo = self._new_repository(
            "mirror",
            f"Mirror of {upstream.registry}/{upstream.path} (vllm-gcp)",
            # A mirrored tag must never silently move to other bytes.
            docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(immutable_tags=True),
        )
        source = self._config.model.image
        pulled = docker.RemoteImage(
            f"{self._base_name}-pull",
            name=source,
            platform=PLATFORM,
            keep_locally=False,
            opts=self._child_opts,
        )
        target = pulumi.Output.concat(repo.registry_uri, "/", upstream.path, ":", upstream.tag or "")
        tagged = docker.Tag(
            f"{self._base_name}-tag", source_image=pulled.image_id, target_image=target, opts=self._child_opts
        )
        pushed = docker.RegistryImage(
            f"{self._base_name}-push",
            name=tagged.target_image,
            keep_remotely=True,  # running VMs reference this digest; deleting it would break their reboots
            triggers={"source": pulled.repo_digest},
            opts=self._child_opts,
        )
        digest = pushed.sha256_digest.apply(lambda d: require_digest(d, source))
        return pulumi.Output.concat(repo.registry_uri, "/", upstream.path, "@", digest)

    def _custom_build(self, build: CustomBuild) -> pulumi.Output[str]:
        repo = self._new_repository("build", "Custom vLLM serving images (vllm-gcp)")
        image = docker.Image(
            f"{self._base_name}-build",
            image_name=pulumi.Output.concat(repo.registry_uri, "/", build.image_name, ":", build.tag),
            build=docker.DockerBuildArgs(
                context=build.context,
                dockerfile=build.dockerfile,
                platform=PLATFORM,
                args={"VLLM_BASE_IMAGE": self._config.model.image, **build.args},
            ),
            opts=self._child_opts,
        )
        # repo_digest is `<registry_uri>/<image_name>@sha256:...`: the pushed manifest, immutable.
        return image.repo_digest
