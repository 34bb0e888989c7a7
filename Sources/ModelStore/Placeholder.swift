enum _PlaceholderModelStore {}
