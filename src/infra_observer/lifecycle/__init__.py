"""The flow-run lifecycle: states proposed to the orchestration API from what sources observe."""
