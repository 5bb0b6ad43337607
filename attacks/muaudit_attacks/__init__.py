"""muaudit's built-in membership-inference attacks, registered through the ``muaudit.attacks`` entry points."""
