"""Graph builders."""
