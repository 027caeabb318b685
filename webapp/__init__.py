"""Script Runner: the web application (its factory is webapp/app.py) and what the worker shares with it."""
