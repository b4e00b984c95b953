"""Every physical name a mocked run declares, checked against its cloud's rule (stacks/naming.py)."""

from __future__ import annotations

from stacks import contract, naming

#: Resource types Pulumi auto-names from the logical name (+ "-" + 7 hex), with the rule.
GCP_AUTONAMED = {
    "gcp:compute/network:Network": naming.gcp_resource_name,
    "gcp:compute/subnetwork:Subnetwork": naming.gcp_resource_name,
    "gcp:compute/firewall:Firewall": naming.gcp_resource_name,
    "gcp:compute/globalAddress:GlobalAddress": naming.gcp_resource_name,
    "gcp:compute/address:Address": naming.gcp_resource_name,
    "gcp:compute/instance:Instance": naming.gcp_resource_name,
    "gcp:compute/instanceTemplate:InstanceTemplate": naming.gcp_resource_name,
    "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager": naming.gcp_resource_name,
    "gcp:compute/healthCheck:HealthCheck": naming.gcp_resource_name,
    "gcp:compute/backendService:BackendService": naming.gcp_resource_name,
    "gcp:compute/uRLMap:URLMap": naming.gcp_resource_name,
    "gcp:compute/targetHttpsProxy:TargetHttpsProxy": naming.gcp_resource_name,
    "gcp:compute/globalForwardingRule:GlobalForwardingRule": naming.gcp_resource_name,
    "gcp:compute/managedSslCertificate:ManagedSslCertificate": naming.gcp_resource_name,
    "gcp:compute/sSLCertificate:SSLCertificate": naming.gcp_resource_name,
    "gcp:compute/sSLPolicy:SSLPolicy": naming.gcp_resource_name,
    "gcp:compute/securityPolicy:SecurityPolicy": naming.gcp_resource_name,
    "gcp:compute/router:Router": naming.gcp_resource_name,
    "gcp:compute/routerNat:RouterNat": naming.gcp_resource_name,
    "gcp:sql/databaseInstance:DatabaseInstance": lambda n: naming.rds_identifier(n, 98),
    "gcp:storage/bucket:Bucket": naming.gcs_bucket_name,
}
AWS_AUTONAMED = {
    "aws:s3/bucket:Bucket": naming.s3_bucket_name,
    "aws:rds/instance:Instance": naming.rds_identifier,
    "aws:rds/subnetGroup:SubnetGroup": lambda n: naming.iam_name(n, 255),
    "aws:rds/parameterGroup:ParameterGroup": naming.rds_identifier,
    "aws:iam/role:Role": naming.iam_name,
    "aws:iam/instanceProfile:InstanceProfile": lambda n: naming.iam_name(n, 128),
    "aws:ec2/keyPair:KeyPair": lambda n: naming.iam_name(n, 255),
    "aws:ec2/securityGroup:SecurityGroup": lambda n: naming.iam_name(n, 255),
    "aws:lb/loadBalancer:LoadBalancer": naming.aws_lb_name,
    "aws:lb/targetGroup:TargetGroup": naming.aws_lb_name,
    "aws:ec2/launchTemplate:LaunchTemplate": lambda n: naming.iam_name(n, 128),
    "aws:autoscaling/group:Group": lambda n: naming.iam_name(n, 255),
}


def check_run(run, stack: str) -> list[str]:
    """Every physical name of ``run`` (a stack_harness.StackRun); raises NameRuleError."""
    checked = []
    for resource in run.resources:
        rule = GCP_AUTONAMED.get(resource.typ) or AWS_AUTONAMED.get(resource.typ)
        if rule is not None:
            checked.append(rule(resource.name + naming.AUTONAME_SUFFIX))
        inputs = resource.inputs
        if resource.typ.endswith(":RegionInstanceGroupManager"):
            checked.append(naming.gcp_base_instance_name_rule(inputs["baseInstanceName"]))
        if resource.typ == "gcp:serviceaccount/account:Account":
            checked.append(naming.gcp_service_account_id(inputs["accountId"]))
        if resource.typ.startswith("gcp:"):
            for value in (inputs.get("labels") or {}).values():
                checked.append(naming.gcp_label_value(value))
            description = inputs.get("description") or ""
            if "[" + contract.LABEL_STACK in description:
                assert (
                    contract.DESCRIPTION_MARKER.format(stack=naming.stack_label(stack))
                    in description
                )
        if resource.typ.startswith("aws:"):
            tags = inputs.get("tags") or {}
            # An Auto Scaling group's tags are a list; a launch template's also go on
            # what it launches.
            values = [t["value"] for t in tags] if isinstance(tags, list) else list(tags.values())
            for spec in inputs.get("tagSpecifications") or []:
                values.extend(spec["tags"].values())
            for value in values:
                checked.append(naming.aws_tag_value(value))
        if inputs.get("finalSnapshotIdentifier"):
            checked.append(naming.rds_identifier(inputs["finalSnapshotIdentifier"], 255))
    return checked
