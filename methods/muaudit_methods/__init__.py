"""muaudit's built-in unlearning methods, registered through the ``muaudit.methods`` entry points."""
