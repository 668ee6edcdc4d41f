"""`ServiceNetwork`: a dedicated VPC for the GPU VMs, egress through Cloud NAT, ingress only from Google's front ends.

- A custom-mode VPC of our own, not the project's `default` network, whose pre-made rules admit SSH and RDP from
  anywhere and all internal traffic.
- The VMs have no external IP. Egress (Hugging Face downloads) goes through Cloud Router + Cloud NAT; Google APIs
  (Artifact Registry, Secret Manager, Monitoring, Logging) through Private Google Access on the subnet.
- One ingress rule: TCP to the serving port from 35.191.0.0/16 and 130.211.0.0/22, the ranges that the global
  external Application Load Balancer's proxies and Google's health checkers use
  (https://cloud.google.com/load-balancing/docs/health-check-concepts#ip-ranges), and only to VMs that run as the
  service's own service account. Everything else hits the VPC's implied deny-ingress rule.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from .naming import check_component_name

GOOGLE_FRONT_END_RANGES = ("35.191.0.0/16", "130.211.0.0/22")
DEFAULT_SUBNET_CIDR = "10.10.0.0/20"


class ServiceNetwork(pulumi.ComponentResource):
    """VPC + regional subnet + Cloud Router + Cloud NAT + the load balancer's ingress rule."""

    network: gcp.compute.Network
    subnetwork: gcp.compute.Subnetwork
    router: gcp.compute.Router
    nat: gcp.compute.RouterNat
    firewall: gcp.compute.Firewall

    def __init__(
        self,
        name: str,
        *,
        project: str,
        region: str,
        target_service_account: pulumi.Input[str],
        serve_port: int,
        subnet_cidr: str = DEFAULT_SUBNET_CIDR,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("vllm-gcp:gce:Network", name, None, opts)
        # Children add up to 15 characters ("-allow-lb", "-subnet") plus Pulumi's 8-character suffix.
        check_component_name(name, "ServiceNetwork", max_len=40)
        child = pulumi.ResourceOptions(parent=self)
        self.network = gcp.compute.Network(
            f"{name}-vpc",
            project=project,
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            description="vllm-gcp: GPU serving VMs (no external IPs; ingress only from Google front ends)",
            opts=child,
        )
        self.subnetwork = gcp.compute.Subnetwork(
            f"{name}-subnet",
            project=project,
            region=region,
            network=self.network.id,
            ip_cidr_range=subnet_cidr,
            # Artifact Registry, Secret Manager, Monitoring and Logging without NAT or external IPs.
            private_ip_google_access=True,
            opts=child,
        )
        self.router = gcp.compute.Router(
            f"{name}-router", project=project, region=region, network=self.network.id, opts=child
        )
        self.nat = gcp.compute.RouterNat(
            f"{name}-nat",
            project=project,
            region=region,
            router=self.router.name,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
            subnetworks=[
                gcp.compute.RouterNatSubnetworkArgs(
                    name=self.subnetwork.id, source_ip_ranges_to_nats=["ALL_IP_RANGES"]
                )
            ],
            # Weight downloads open many parallel connections per VM.
            enable_dynamic_port_allocation=True,
            min_ports_per_vm=256,
            log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            opts=child,
        )
        self.firewall = gcp.compute.Firewall(
            f"{name}-allow-lb",
            project=project,
            network=self.network.id,
            direction="INGRESS",
            priority=1000,
            description=f"Google front ends (load balancer + health checks) to the vLLM port {serve_port} only",
            source_ranges=list(GOOGLE_FRONT_END_RANGES),
            allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=[str(serve_port)])],
            target_service_accounts=[target_service_account],
            log_config=gcp.compute.FirewallLogConfigArgs(metadata="EXCLUDE_ALL_METADATA"),
            opts=child,
        )
        self.register_outputs(
            {"network": self.network.id, "subnetwork": self.subnetwork.id, "nat": self.nat.name}
        )
