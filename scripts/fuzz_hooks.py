"""Schemathesis hooks of scripts/fuzz-contract.sh (loaded through
SCHEMATHESIS_HOOKS): state the schema cannot describe.

- Register: an e-mail can be registered once (the second answer is the real
  backend's 400 "Email already registered"), and the generator repeats
  e-mails. Each generated e-mail gets a unique prefix, so positive cases
  reach the handler's validation rather than the conflict; a negative one
  stays negative (the prefix adds neither an `@` nor a blank).
- Admin credits: the user must exist. Where the generated id is a UUID (a
  positive case), it becomes the test user's (FUZZ_USER_ID), so positive
  cases reach the handler rather than "User not found".
"""

import itertools
import os
import uuid

import schemathesis

_serial = itertools.count()


def _is_operation(context, method, path):
    operation = context.operation
    return (
        operation is not None
        and operation.method.upper() == method
        and operation.path == path
    )


@schemathesis.hook
def map_body(context, body):
    if (
        _is_operation(context, "POST", "/api/auth/register")
        and isinstance(body, dict)
        and isinstance(body.get("email"), str)
    ):
        body = dict(body, email=f"fz{next(_serial)}.{body['email']}")
    return body


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    user_id = os.environ.get("FUZZ_USER_ID")
    if (
        user_id
        and _is_operation(context, "POST", "/api/admin/users/{id}/credits")
        and isinstance(path_parameters, dict)
        and _is_uuid(path_parameters.get("id"))
    ):
        path_parameters = dict(path_parameters, id=user_id)
    return path_parameters


def _is_uuid(value):
    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False
