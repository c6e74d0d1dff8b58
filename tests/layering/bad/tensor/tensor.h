/* Fixture of test_layers_includes_rejects: a lowest layer. */
