"""The chat: people-level state above the agent — the user's profile, contacts, contact
addresses, groups and their members, messages — as actors that drive the agent with async
commands and continue them from stored state (`owner.py` explains how), and route the
agent's events to their owners (`chat.py`). The agent knows nothing of chats; the chat
reaches it only through `actors.agent.api`."""
