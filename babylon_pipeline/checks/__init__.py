"""Asset checks that live beside, not inside, the assets they check."""
