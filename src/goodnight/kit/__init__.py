"""Small shared building blocks: time, identifiers, cursors."""
