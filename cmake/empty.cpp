// Placeholder unit for a concern with no sources yet.
