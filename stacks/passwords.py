"""Generated passwords: the rule each one was first deployed with, and the one function
that creates them on either cloud.

A ``random.RandomPassword`` keeps its value only while its arguments stay the same: a
changed length or character set generates a new password on the next ``pulumi up``
(a new database password would lock the servers out until bootstrap runs again). So
each rule below is what its password has always been created with, and
``random_password`` passes exactly the arguments a rule names, no more.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

#: Beyond letters and digits, URL-unreserved characters only: a password also survives
#: env files and ini files on the VM unquoted.
URL_SAFE_SPECIALS = "-_.~"
#: RDS refuses "/", "@", '"' and spaces in master passwords.
RDS_SPECIALS = "!#$%&*()-_=+[]{}<>:?"


@dataclass(frozen=True, kw_only=True)
class PasswordRule:
    length: int = 32
    #: Characters allowed besides letters and digits; None for letters and digits only.
    specials: str | None = None
    #: At least one lowercase letter, one uppercase letter and one digit.
    every_class: bool = False
    min_special: int = 0


#: GCP: Cloud SQL user and MLflow admin.
GCP_PASSWORD = PasswordRule(specials=URL_SAFE_SPECIALS, every_class=True)
#: AWS: the RDS master user.
RDS_PASSWORD = PasswordRule(specials=RDS_SPECIALS, min_special=2)
#: AWS: the MLflow admin (MLflow's basic auth wants at least 12 characters).
AWS_ADMIN_PASSWORD = PasswordRule()


def admin_password(
    chosen: pulumi.Output[str] | None, generated: pulumi.Output[str]
) -> pulumi.Output[str]:
    """The MLflow admin password a stack exports: the operator's own (the stack secret
    ``adminPassword``, set by ``fab rotate-admin-password``) when set, else the generated
    one. The generated password stays declared either way, so setting or removing
    ``adminPassword`` changes the output and replaces nothing."""
    return pulumi.Output.secret(generated if chosen is None else chosen)


def random_password(
    name: str, rule: PasswordRule, opts: pulumi.ResourceOptions
) -> random.RandomPassword:
    """A password per ``rule``; its arguments are exactly those the rule names."""
    arguments: dict = {"length": rule.length, "special": rule.specials is not None}
    if rule.specials is not None:
        arguments["override_special"] = rule.specials
    if rule.every_class:
        arguments.update(min_lower=1, min_upper=1, min_numeric=1)
    if rule.min_special:
        arguments["min_special"] = rule.min_special
    return random.RandomPassword(name, **arguments, opts=opts)


#: Secrets every instance of a group shares (the Flask session key, the KEK passphrase):
#: letters and digits only, as the files and env files on the instances hold them.
SHARED_SECRET = PasswordRule(length=64)


def shared_secret(name: str, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """A ``SHARED_SECRET`` every instance of a group gets, as a secret output."""
    return pulumi.Output.secret(random_password(name, SHARED_SECRET, opts).result)
