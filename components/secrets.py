"""`ManagedSecret`: one Secret Manager secret, its current version, and per-secret accessor grants.

The value arrives as a Pulumi Input and is forced secret before it reaches any resource, so it is encrypted in the
Pulumi state and shown as `[secret]` in previews and in the offline plan. Readers get
`roles/secretmanager.secretAccessor` on this secret only, never project-wide. What other resources may carry in
plaintext is `version_name` (`projects/<number>/secrets/<id>/versions/<n>`): a reference, not the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_gcp as gcp

SECRET_ACCESSOR_ROLE = "roles/secretmanager.secretAccessor"
_SECRET_ID_MAX = 255


class ManagedSecret(pulumi.ComponentResource):
    """A Secret Manager secret holding `value`, readable only by `accessors` (IAM members)."""

    secret: gcp.secretmanager.Secret
    version: gcp.secretmanager.SecretVersion
    secret_id: pulumi.Output[str]
    version_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        secret_id: str,
        value: pulumi.Input[str],
        accessors: Sequence[pulumi.Input[str]] = (),
        project: str | None = None,
        labels: Mapping[str, str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("vllm-gcp:secrets:ManagedSecret", name, None, opts)
        if (
            not secret_id
            or len(secret_id) > _SECRET_ID_MAX
            or not secret_id.replace("-", "").replace("_", "").isalnum()
        ):
            raise ValueError(
                f"ManagedSecret {name!r}: secret_id {secret_id!r} is not valid; use 1-{_SECRET_ID_MAX} letters, "
                "digits, '-' or '_'"
            )
        child = pulumi.ResourceOptions(parent=self)
        self.secret = gcp.secretmanager.Secret(
            f"{name}-secret",
            secret_id=secret_id,
            project=project,
            replication=gcp.secretmanager.SecretReplicationArgs(
                auto=gcp.secretmanager.SecretReplicationAutoArgs()
            ),
            labels=dict(labels or {}),
            opts=child,
        )
        self.version = gcp.secretmanager.SecretVersion(
            f"{name}-version",
            secret=self.secret.id,
            # Secret even when the caller passed a plain string: it must never be stored or shown in clear.
            secret_data=pulumi.Output.secret(value),
            opts=child,
        )
        self.grants = [
            gcp.secretmanager.SecretIamMember(
                f"{name}-accessor-{index}",
                project=self.secret.project,
                secret_id=self.secret.secret_id,
                role=SECRET_ACCESSOR_ROLE,
                member=member,
                opts=child,
            )
            for index, member in enumerate(accessors)
        ]
        self.secret_id = self.secret.secret_id
        self.version_name = self.version.name
        self.register_outputs({"secret_id": self.secret_id, "version_name": self.version_name})
