"""The transfer engine: plan, move, verify, place, record."""
