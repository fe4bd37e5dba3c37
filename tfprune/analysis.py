def analyze(model): raise NotImplementedError
