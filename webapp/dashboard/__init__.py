"""The dashboard page (`/`): views, the numbers behind it, and its server-drawn charts."""
