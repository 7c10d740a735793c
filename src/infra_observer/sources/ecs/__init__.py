"""The ECS task watcher: "ECS Task State Change" events read from an SQS queue.

`source` (the SQS loop: receive, hand over, acknowledge), `translate` (pure: message body →
change → event), `diagnosis` (pure: what went wrong with a stopped task), `tags` (reading a
task's tags), `memory` (what is remembered per task), `messages` (a message's order and fate),
`clients` (region and AWS clients), `advice` (what an AWS error means and how to fix it),
`concurrency` (how many messages at once, one at a time per task), `metrics`.
"""

from infra_observer.sources.ecs.advice import IAM_ACTIONS
from infra_observer.sources.ecs.source import EcsSource
from infra_observer.sources.ecs.translate import TaskStateChange, parse_message, translate

__all__ = ["IAM_ACTIONS", "EcsSource", "TaskStateChange", "parse_message", "translate"]
