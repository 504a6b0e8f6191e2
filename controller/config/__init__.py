"""The controller's settings (pydantic-settings, ``MODELFERRY_CONTROLLER__*``): read by every level above."""
