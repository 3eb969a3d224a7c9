"""The object store: local files in the embedded profile, any S3-compatible server in production."""
