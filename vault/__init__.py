"""The user's data: the only code that knows the vault's layout. Imports nothing else of Home's."""
