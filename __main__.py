"""vllm-gcp: load the stack config, build the chosen platform, export what clients need. No resource logic here."""

import pulumi

from components.capacity import plan_capacity
from components.config import ConfigError, load_config
from components.cost import estimate_cost

try:
    loaded = load_config()
    capacity = plan_capacity(loaded.stack)
except ConfigError as error:
    raise pulumi.RunError(str(error)) from None

config = loaded.stack
for warning in config.warnings:
    pulumi.log.warn(warning)

pulumi.export("platform", config.platform)
pulumi.export("servedModelName", config.model.served_name)
pulumi.export("estimatedMonthlyCostUsd", estimate_cost(config)["monthlyUsd"])
