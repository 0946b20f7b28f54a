"""What scores a head crop: a trained classifier run, the local-feature matcher, the new-whale score."""
