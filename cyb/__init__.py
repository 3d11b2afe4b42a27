"""The `cyb` command: composes cyb_core (library), analysis (store, queries) and app."""
