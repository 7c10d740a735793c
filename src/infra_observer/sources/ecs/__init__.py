"""The ECS task watcher: "ECS Task State Change" events read from an SQS queue.

`source` (the SQS loop: receive, hand over, acknowledge), `translate` (pure: message body →
change → event), `diagnosis` (pure: what went wrong with a stopped task), `tags` (reading a
task's tags), `memory` (what is remembered per task), `messages` (a message's order and fate),
`clients` (region and AWS clients), `advice` (what an AWS error means and how to fix it),
`concurrency` (how many messages at once, one at a time per task), `metrics`, `lifecycle`
(pure: what a change asks of its flow run), `crash_logs` (a task's last CloudWatch lines),
`catalog` (the task events' builders).

The package itself imports none of its modules: `catalog` is read by `infra-observer emit` at
every start, and must not bring the AWS client with it.
"""
