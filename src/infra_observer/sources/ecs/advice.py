"""What an AWS error means for the ECS source and how to fix it: IAM, queue, credentials.

Every message names the IAM action that was refused, so the fix is one line of policy;
`IAM_ACTIONS` is the whole list, which the policy in deploy/aws/ grants exactly.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

DESCRIBE_TASKS = "ecs:DescribeTasks"
# Read only when a crash is accepted, to forward the task's last log lines.
CRASH_LOG_ACTIONS = {
    "DescribeTaskDefinition": "ecs:DescribeTaskDefinition",
    "GetLogEvents": "logs:GetLogEvents",
}
IAM_ACTIONS = frozenset(
    {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        DESCRIBE_TASKS,
        *CRASH_LOG_ACTIONS.values(),
    }
)
"""Every AWS action this source calls: the policy in deploy/aws/ grants exactly these."""
# "403": botocore's code when a refusal's body cannot be parsed (some compatible services).
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "KMS.AccessDeniedException",
        "403",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
    }
)
_TARGETS = {
    DESCRIBE_TASKS: "tasks of the watched clusters",
    "ecs:DescribeTaskDefinition": "task definitions",
    "logs:GetLogEvents": "the log groups of the flow runs' tasks",
}
_MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


def explain(exc: ClientError | BotoCoreError, *, queue_url: str | None) -> str:
    """What went wrong and how to fix it, naming the IAM action that was refused."""
    if isinstance(exc, ClientError):
        return _explain_refusal(exc, queue_url=queue_url)
    if isinstance(exc, NoCredentialsError):
        return (
            "no AWS credentials found: provide them the standard way (AWS_PROFILE, "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web identity / IRSA, instance role)"
        )
    if isinstance(exc, NoRegionError):
        return "no AWS region: set INFRA_OBSERVER_ECS_REGION or AWS_REGION"
    return f"{exc} (check network access to the AWS endpoint)"


def _explain_refusal(exc: ClientError, *, queue_url: str | None) -> str:
    code = error_code(exc)
    action = _iam_action(exc.operation_name)
    if code in _DENIED_CODES:
        target = _TARGETS.get(action, "the queue")
        return (
            f"{action} was denied ({code}): allow {action} on {target} for the daemon's "
            "IAM role (deploy/aws/ has the policy with every action needed)"
        )
    if code in _CREDENTIAL_CODES:
        return f"AWS rejected the credentials ({code}): check the daemon's AWS identity"
    if code in _MISSING_QUEUE_CODES:
        return (
            f"queue {queue_url} does not exist ({code}): check "
            "INFRA_OBSERVER_ECS_QUEUE_URL and the region"
        )
    message = exc.response.get("Error", {}).get("Message", "")
    return f"{action} failed ({code}): {message}"


def error_code(exc: ClientError | BotoCoreError) -> str:
    """AWS's error code, or the exception's name when AWS gave none (network, credentials)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


def missing_permission(exc: ClientError | BotoCoreError) -> str | None:
    """The IAM action that was refused, when the error is a refusal."""
    if isinstance(exc, ClientError) and error_code(exc) in _DENIED_CODES:
        return _iam_action(exc.operation_name)
    return None


def _iam_action(operation_name: str) -> str:
    if operation_name == "DescribeTasks":
        return DESCRIBE_TASKS
    return CRASH_LOG_ACTIONS.get(operation_name, f"sqs:{operation_name}")
