"""Reading and writing files that several layers share (images, videos, plots), below the methods and the engine."""
