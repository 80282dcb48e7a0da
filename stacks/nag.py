"""cdk-nag acknowledgments: each names one finding and says why it is accepted."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

#: Rule-id prefix -> the cdk-nag pack (validation plugin) that reports it.
PACKS = {"AwsSolutions-": "AwsSolutions", "Serverless-": "Serverless"}


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept one cdk-nag finding (``RuleId`` or ``RuleId[Finding]``) on ``scope`` and below."""
    pack = next((pack for prefix, pack in PACKS.items() if rule.startswith(prefix)), None)
    if pack is None:
        raise ValueError(f"{rule!r} is not a rule of the packs dmsbus runs ({', '.join(PACKS.values())})")
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{pack}::{rule}", reason=reason))
