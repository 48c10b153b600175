"""The skiff user interfaces: the one-shot CLI (and, later, the Textual TUI). Shows; decides nothing."""
