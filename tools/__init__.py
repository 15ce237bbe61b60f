"""Image tools: search, diffusion, code, edit."""
