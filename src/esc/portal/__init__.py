"""The portal on port 9001 (esc.portal.app), served with the controller by the active."""
