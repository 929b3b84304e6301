#include "agent/clock.h"
