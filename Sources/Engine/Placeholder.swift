enum _PlaceholderEngine {}
