"""What people look at: reports, figures, the review page, occlusion maps."""
