"""HTTP surfaces: OpenAI and Anthropic APIs, admin, health."""
