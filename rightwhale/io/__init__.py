"""Reading and writing the survey: Kaggle CSV and Sloth JSON, photos, the image cache, the stored split, submissions, checkpoints, histories, crop folders and the synthetic survey."""
