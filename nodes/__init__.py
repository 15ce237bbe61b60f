"""Graph nodes: intake, planner, dispatch, verifier, assembler."""
