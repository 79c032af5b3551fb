"""The agent: duplex connections built from queues, as actors (`AgentActor`, `ConnectionActor`,
per-server session actors), their events and configuration."""
