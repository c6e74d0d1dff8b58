/* Fixture of test_layers_includes_rejects: the lowest layer reaching up to a layer above it. */
#include "conv.h"
