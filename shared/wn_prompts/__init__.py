"""wn-prompts: WordNet synsets to prompt records."""
