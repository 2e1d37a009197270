// Precompiled-header carrier.
