"""Request and response features: thinking, tools, sessions."""
