package registry

// SetMaxCachedKeys changes the key cache's bound for a test.
func SetMaxCachedKeys(n int) (restore func()) {
	old := maxCachedKeys
	maxCachedKeys = n
	return func() { maxCachedKeys = old }
}

// CachedKeys is how many identities' keys s caches.
func CachedKeys(s *Service) int {
	s.keysMu.RLock()
	defer s.keysMu.RUnlock()
	return len(s.keys)
}
