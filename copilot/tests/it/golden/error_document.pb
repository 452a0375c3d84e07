
.
InputDownloadFailedboom *─Бо╙2pod-1