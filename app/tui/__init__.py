"""The Textual TUI (`skiff` with no arguments). Textual is imported only under skiff.app."""
