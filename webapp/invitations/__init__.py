"""Invitations to join a tenant: made by its admins, accepted through a one-time link."""
