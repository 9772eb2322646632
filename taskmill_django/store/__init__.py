"""The only writers of taskmill tables. Each public function is one transaction."""
