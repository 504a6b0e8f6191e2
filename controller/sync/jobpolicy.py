"""Pure: is a ModelSync's ``spec.job`` within the platform admin's policy (:class:`JobPolicySettings`)?

A tenant who may create a ModelSync must not pick the image that runs next to its credentials, the
identity (ServiceAccount) the pod runs as, or nodes the platform reserves (tolerations, nodeSelector).
Each refusal names the setting that would allow it.
"""

from __future__ import annotations

from modelferry.controller.api.v1alpha1.modelsync import JobOverrides
from modelferry.controller.config.controller import JobPolicySettings, JobSettings
from modelferry.controller.sync.secretmode import Finding

ENV = "MODELFERRY_CONTROLLER__JOB_POLICY__"


def _allowed(value: str, allowed: list[str]) -> bool:
    return any(entry in ("*", value) or (entry.endswith("*") and value.startswith(entry[:-1])) for entry in allowed)


def check_job_overrides(job: JobOverrides, policy: JobPolicySettings, defaults: JobSettings) -> Finding | None:
    """None when ``spec.job`` is allowed, else the Ready=False finding (reason names the setting)."""
    image = job.image
    if image and image != defaults.image and not _allowed(image, policy.allowed_images):
        return Finding(
            "JobPolicyAllowedImages",
            f"spec.job.image {image!r} is not allowed: the platform admin lists the images a ModelSync may use in "
            f"{ENV}ALLOWED_IMAGES (default: only the controller's sync image {defaults.image!r}); remove spec.job.image",
        )
    if job.service_account_name and not policy.allow_service_account_name:
        return Finding(
            "JobPolicyAllowServiceAccountName",
            "spec.job.serviceAccountName is not allowed: sync pods run under the namespace's default "
            f"ServiceAccount unless the platform admin sets {ENV}ALLOW_SERVICE_ACCOUNT_NAME=true; remove it",
        )
    for toleration in job.tolerations:
        key = str(toleration.get("key") or "")
        if not _allowed(key, policy.allowed_toleration_keys):  # a keyless toleration matches only '*'
            shown = repr(key) if key else "without a key (it tolerates every taint)"
            return Finding(
                "JobPolicyAllowedTolerationKeys",
                f"spec.job.tolerations: a toleration {shown} is not allowed; the platform admin lists the taint keys "
                f"a ModelSync may tolerate in {ENV}ALLOWED_TOLERATION_KEYS; remove it",
            )
    for key in job.node_selector:
        if not _allowed(key, policy.allowed_node_selector_keys):
            return Finding(
                "JobPolicyAllowedNodeSelectorKeys",
                f"spec.job.nodeSelector key {key!r} is not allowed; the platform admin lists the label keys a "
                f"ModelSync may select nodes by in {ENV}ALLOWED_NODE_SELECTOR_KEYS; remove it",
            )
    return None
